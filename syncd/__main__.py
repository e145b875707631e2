"""`python -m syncd` runs the command line."""

import gc

from syncd.cli import main

# The ~90k objects of the imported modules live as long as the process: kept out of the
# collector's full passes, which otherwise walk them all a dozen times while a first sync
# of 50k products is planned (~5 µs per product and target, a tenth of the plan).
gc.freeze()
main()
