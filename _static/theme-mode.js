// A first-time reader has no stored mode: pydata-sphinx-theme would log "Got invalid theme mode" and use auto.
if (!document.documentElement.dataset.mode) { document.documentElement.dataset.mode = "auto"; }
