"""The "Fine-tune" view of the Airflow UI: a plugin for the api-server (Airflow 3.1+).

``plugin.FineTuneViewPlugin`` is registered through the provider info, so installing the package is
enough. It mounts a small FastAPI app (``app.create_app``) under ``/ftevents`` and adds a tab to every
task instance page; the tab shows the job of a ``FineTuneJobSensor``, ``FineTuneJobOperator`` or
``FineTuneEventsExportOperator`` task. See ``docs/ui.md``.
"""
