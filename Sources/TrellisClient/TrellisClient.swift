// TrellisClient: module under construction.
