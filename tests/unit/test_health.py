"""Outages: what /readyz reports about the clap log and the counter store."""
from gateway.health import Outages

T0 = 1_764_547_200.0  # 2025-12-01T00:00:00Z


def test_nothing_failed_means_no_reasons():
    assert Outages().reasons(T0) == []


def test_a_failure_is_reported_from_its_first_occurrence_with_the_latest_error():
    outages = Outages(hold_s=30)
    outages.failed("clap log", T0, TimeoutError())
    outages.failed("clap log", T0 + 10, ConnectionError("broker gone"))
    assert outages.reasons(T0 + 11) == [
        "clap log unavailable since 2025-12-01T00:00:00+00:00: ConnectionError: broker gone"
    ]


def test_a_success_clears_the_reason():
    outages = Outages()
    outages.failed("counter store", T0, ConnectionError("down"))
    outages.recovered("counter store")
    assert outages.reasons(T0 + 1) == []


def test_a_failure_with_no_call_since_is_forgotten_after_the_hold():
    outages = Outages(hold_s=30)
    outages.failed("counter store", T0, ConnectionError("down"))
    assert len(outages.reasons(T0 + 30)) == 1
    assert outages.reasons(T0 + 30.5) == []


def test_a_new_failure_after_the_hold_starts_a_new_outage():
    outages = Outages(hold_s=30)
    outages.failed("clap log", T0, OSError("disk"))
    outages.failed("clap log", T0 + 100, OSError("disk"))
    assert outages.reasons(T0 + 100) == ["clap log unavailable since 2025-12-01T00:01:40+00:00: OSError: disk"]


def test_every_dependency_that_is_away_is_listed():
    outages = Outages()
    outages.failed("counter store", T0, ConnectionError("a"))
    outages.failed("clap log", T0, ConnectionError("b"))
    assert [reason.split(" unavailable")[0] for reason in outages.reasons(T0)] == ["clap log", "counter store"]
