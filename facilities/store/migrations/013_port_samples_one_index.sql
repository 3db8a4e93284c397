-- port_samples keeps its primary key only. Every read of it names a station and a time
-- range (a station's messages with their ports, one port's history, the buckets of a
-- chart), which the key (station, ts, seq, port) serves; the second index on
-- (station, port, ts) cost a second B-tree insert for every port of every message: half of
-- SQLite's time for ten-port telemetry and 28 % of the file (docs/performance.md).
DROP INDEX port_samples_by_port;
