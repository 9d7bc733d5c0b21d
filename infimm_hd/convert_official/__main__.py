"""`python -m infimm_hd.convert_official SRC DST`: the converter's command line (see `main`)."""

from . import main

raise SystemExit(main())
