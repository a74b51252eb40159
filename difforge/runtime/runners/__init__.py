"""Engine runners: one interface (``Runner.infer``), one subclass per backend."""
