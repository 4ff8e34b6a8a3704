"""tb_trainer: the Lightning trainer tb runs in each job container."""
