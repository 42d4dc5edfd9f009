//! Act: carries out a planned action on the cluster. Does IO.
