// TrellisMeta: module under construction.
