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
the fit, which the worker uploads with the trial; on ``stop`` or ``complete`` it ends the fit.
The Lightning and Transformers callbacks save on ``complete`` as well (and when the job's
last epoch gets a plain ``continue``): the worker keeps that checkpoint as the trial's model.
A resumed job finds that checkpoint and goes on from the epoch after the paused one, on
whichever worker it lands.
"""
