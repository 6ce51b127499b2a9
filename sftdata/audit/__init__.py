"""The mask audit: prove, from the shard tokens alone, that only assistant answers are trained.

Why it exists: a label mask that is off by one token (a trained header, a shifted label, an
untrained ``<|eot_id|>``) trains a model that looks fine and behaves subtly wrong; nobody notices
until evaluation. The audit re-derives the Llama-3 turn structure from ``input_ids`` for *every*
row (vectorised with numpy, so it costs far less than the tokenization that made the rows), checks
the labels against it, checks the manifest against the shards, and fails loudly.

``sftdata.audit.run.run_audit`` is the whole audit; ``sftdata.audit.integrity.verify_folder`` only
the manifest-versus-files part. The package exports nothing itself (its command module,
``sftdata.audit.command``, stays light to import): import a name from the module that defines it.
"""
