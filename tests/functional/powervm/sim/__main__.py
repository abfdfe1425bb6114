import sys

from tests.functional.powervm.sim import server

sys.exit(server.main())
