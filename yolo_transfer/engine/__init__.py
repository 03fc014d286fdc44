"""Training engine: loss, optimisation, evaluation, prediction and the phase-running trainer."""
