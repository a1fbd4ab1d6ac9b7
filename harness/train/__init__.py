"""Training, one layer of its own (below the stages, above models and data):
the recipe's schedules and loop bookkeeping (``common``), the training inputs
(``inputs``), one run whichever the framework (``run``), the MindSpore and
PyTorch paths (``mindspore_trainer``, ``torch_trainer``), several devices
through the frameworks' launchers (``launchers``, ``worker``), step timing
(``timing``) and the plan: a suite's ``train:`` target resolved, its
identity, its training images apart from accuracy's, and "train or load"
(``plan``). Nothing in :mod:`harness.models` imports it, so editing training
code leaves cached exports valid.
"""
