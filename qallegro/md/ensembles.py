"""The names of the MD ensembles, apart from their integrators (qallegro.md.dynamics), so that the command line
can list them without importing jax-md (which takes seconds)."""

ENSEMBLES = ("nve", "nvt", "langevin", "nose-hoover")
#: ensembles with a conserved quantity whose drift the watchdog checks
CONSERVING = ("nve", "nose-hoover")
