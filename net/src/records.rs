//! Building record batches from records (client helper).
