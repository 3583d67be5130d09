from loadtest.projector_caught_up import lag_and_records

SCRAPE = """\
# HELP projector_lag Records past the projector's position
projector_lag{kind="total",partition="0",topic="clap-counts"} 3.0
projector_lag{kind="user",partition="4",topic="clap-processor-e1-user-claps-changelog"} 2.0
projector_records_total{kind="total"} 100.0
projector_records_total{kind="user"} 250.0
projector_records_created{kind="user"} 1.7e9
"""


def test_sums_the_lag_of_every_partition_and_the_records_of_both_kinds():
    assert lag_and_records(SCRAPE) == (5.0, 350.0)


def test_a_projector_that_owns_nothing_yet_has_no_lag():
    assert lag_and_records("projector_records_total{kind=\"total\"} 0.0\n") == (0.0, 0.0)
