"""Fitting the cost model's coefficients to measurements.

* :mod:`energylens.calibration.records` — a GPU profile from our own NVML records (``energylens calibrate``);
* :mod:`energylens.calibration.results` — what such a fit returns (values, summaries, residuals).

The core never imports this package; it imports the core (the formulas it fits live in ``cost/``).
"""
