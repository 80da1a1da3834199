"""The preference-data readers behind :func:`dpocheck.llm.data.load_pairs`, one module per source.

- ``containers`` — JSONL / JSON / Parquet files (optionally gzip), one raw record at a time;
- ``fields`` — RecordError and the field checks every reader uses, the optional Δr* fields;
- ``hh`` — HH-RLHF transcripts; ``trl`` — TRL-style records; ``alpacaeval`` — AlpacaEval annotations.
"""
