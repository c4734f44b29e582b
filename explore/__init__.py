"""`lsm explore`: a web explorer for worlds, traces and rollouts (see `explore.app`)."""
