"""The research studies: each trains through succu's Trainer, modules and configs and writes the
tables of its results page (studies/results/). Run from the repository root:
`python -m studies.<name> --help`."""
