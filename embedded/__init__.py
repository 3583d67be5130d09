"""Embedded adapters: the whole service in one process, with no servers to install.

A durable on-disk clap log, an in-process count feed and SQLite for the counts, behind the same
ports as Kafka, Faust and Cassandra.
"""
