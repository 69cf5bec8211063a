-- As migrations/0010_health_probe.sql.
CREATE TABLE health_probe (at BIGINT);
