"""The pure core of the clap service.

Everything here takes values and returns values: no Kafka, Cassandra, websocket, file or clock
imports. Time comes in as an argument (``now_ms``). The Faust agent, the embedded loop, the
gateway and the tests all call these same functions.
"""
