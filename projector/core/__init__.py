"""The projector's pure core: every rule that decides, as functions over plain data, with no I/O.

records    what a record of the orders topic is, and what identifies it
validate   whether its bytes are a valid order, and if not exactly why
redrives   whether a record is a redrive this deployment made (its signature)
verdicts   one record judged alone: an order, an erasure, or a rejection
versions   the one total order of an order's versions
plan       what a batch does: which records are fresh, which version wins, what each offset becomes,
           and the check that every offset below a new position has exactly one fate

The shell around it (projector/checkpoint.py) reads what the plan needs, executes it and writes.
"""
