DROP TABLE token_acquisition_daily;
