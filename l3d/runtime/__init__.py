"""Plumbing the method runs on, none of it L3D itself.

atomic.py       writing files and folders so a crash never leaves half of one
device.py       "auto" -> cuda when available, else cpu
distributed.py  data-parallel training under torchrun (a shard of every batch per process)
resources.py    where trained models are cached; the error when a hub resource is missing offline
validate.py     argument types (as_int, as_float): NumPy numbers taken, bools and strings refused
settings.py     self-checking settings dataclasses (L3DConfig, the notebooks' settings)
threads.py      CPU threads for the work at hand; progress.py: progress bars
"""
