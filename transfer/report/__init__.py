"""Reports on finished runs: `python -m transfer.report` (table.py: tables over seeds with confidence
intervals), aggregates across tasks with rliable (aggregate), run records and archives (runs), curves
(plot), domain-weight tables and plots (domain_weights), per-run diagnostics tables, published numbers
and replay statistics."""
