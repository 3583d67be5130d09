"""Load tests of the clap service: readers, clappers, a broadcast baseline, reports."""
