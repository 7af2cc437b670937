complete --keep-order --exclusive --command ocx --arguments "(COMPLETE=fish ocx -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
