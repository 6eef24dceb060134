"""Fitting the cost model's coefficients to measurements.

* :mod:`energylens.calibration.records` — a GPU profile from our own NVML records (``energylens calibrate``);
* :mod:`energylens.calibration.results` — what such a fit returns (values, summaries, residuals);
* :mod:`energylens.calibration.kernels`, :mod:`~energylens.calibration.power` — the kernel-family latency
  and the kernel power fits on NVIDIA's measured kernel tables (:mod:`~energylens.calibration.tables`),
  written into the profiles by :mod:`~energylens.calibration.profiles` and reported by
  :mod:`~energylens.calibration.report` (``python tools/calibrate_tables.py``).

The core never imports this package; it imports the core (the formulas it fits live in ``cost/``).
"""
