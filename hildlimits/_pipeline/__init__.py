"""The shared pipeline of every family: the diffrax runner, sweeps, gradients, schedules,
validation, caches, config loading, validators, the atomic writer and plots."""
