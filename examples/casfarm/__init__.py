"""casfarm: a simulated Exchange Client Access farm for labs, demos and tests."""
