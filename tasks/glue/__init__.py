"""Task ``glue`` (paper Tables 1–2, RoBERTa on GLUE): so far its data layer, the TSV reader."""
