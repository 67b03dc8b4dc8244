import sys

from product_shop.cli import main

sys.exit(main())
