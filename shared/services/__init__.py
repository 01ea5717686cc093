"""What endpoints and workers both do that takes more than one row or a call to Graph: the mailbox's
Graph subscription (``subscriptions``) and the directory of Bookings businesses (``bookings_directory``)."""
