//! Differential oracles: other implementations decoding the same bytes as
//! skyhouse. `dagcbor` compares the DAG-CBOR decoder with
//! `serde_ipld_dagcbor`, `car` the CAR readers with `iroh-car`. Both name the
//! rules under which skyhouse is deliberately stricter (or, for CARs without
//! roots, laxer) and check each on the input. The fuzz targets `cbor_oracle`
//! and `car_oracle` include these files too.

pub mod car;
pub mod dagcbor;
