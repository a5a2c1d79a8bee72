import sys

from eventbus._cli import main

sys.exit(main())
