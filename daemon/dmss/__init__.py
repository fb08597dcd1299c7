"""DMSS, the Data Modelling storage service: the client, and the write-back relay."""
