// TrellisFlow: module under construction.
