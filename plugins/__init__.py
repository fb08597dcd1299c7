"""Runner plugins shipped with dm-jobd. Each imports only ``daemon.contracts``."""
