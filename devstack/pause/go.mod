module unilingo.local/pause

go 1.24
