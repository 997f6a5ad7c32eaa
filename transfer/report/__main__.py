"""`python -m transfer.report RUN_DIR [RUN_DIR ...] [--out DIR] ...`: see transfer/report/table.py."""
import sys

from transfer.report.table import main

sys.exit(main())
