"""``python -m runs.studies``: print the study table of ``runs/reproduce.py``'s docstring."""

from runs.studies import study_table

print(study_table())
