drop view sync.status;
