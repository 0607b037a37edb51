"""Callbacks that let a framework's own training loop run as a tuneyard objective.

Each module wraps the ``trial`` handle an objective receives for one framework, and each is an
optional extra (``pip install 'tuneyard[lightning]'`` and so on); importing one needs only that
framework:

- :mod:`tuneyard.integrations.lightning`: PyTorch Lightning
- :mod:`tuneyard.integrations.transformers`: Hugging Face Transformers' ``Trainer``
- :mod:`tuneyard.integrations.keras`: Keras 3
- :mod:`tuneyard.integrations.xgboost`: XGBoost
- :mod:`tuneyard.integrations.lightgbm`: LightGBM

They all behave alike. The callback reports the study's metric once per resource unit (an
epoch, or a boosting round) and acts on the service's answer: on ``pause`` it saves the
framework's own checkpoint in the trial's checkpoint directory (``trial.save_with``) and ends
the fit, which the worker uploads with the trial; on ``complete`` it saves it as well and
ends the fit, and the worker keeps it as the trial's model; on ``stop`` it only ends the fit.
A resumed job finds that checkpoint and goes on from the epoch after the paused one, on
whichever worker it lands.
"""
