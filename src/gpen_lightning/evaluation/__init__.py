"""``stage=evaluate``'s parts: ``sets`` (folders matched by file name), ``protocol`` (the
scoring loop every protocol shares) and ``report`` (tables and files). The metrics themselves
are ``gpen_lightning.metrics.scorer``'s, shared with the fine-tuning validation."""
