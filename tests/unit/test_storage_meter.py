"""bench._storage_meter's request counting: what a bench's transaction figures rest on."""

from bench._storage_meter import _Requests, operation

PUT = (b"POST /devstoreaccount1/deliveries/messages?visibilitytimeout=90 HTTP/1.1\r\nHost: x\r\n"
       b"Content-Length: 5\r\n\r\nhello")
DELETE = b"DELETE /devstoreaccount1/deliveries/messages/abc?popreceipt=x HTTP/1.1\r\nHost: x\r\n\r\n"
BATCH = (b"POST /devstoreaccount1/$batch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"b\r\nGET /x HTTP\r\n0\r\n\r\n")
MERGE = (b"MERGE /devstoreaccount1/mailboxes(PartitionKey='a',RowKey='b') HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}")


def test_requests_on_one_keep_alive_connection_are_each_counted_whatever_the_reads() -> None:
    stream = PUT + DELETE + BATCH + MERGE + PUT
    for size in (1, 7, 64, len(stream)):
        requests = _Requests()
        found = [r for i in range(0, len(stream), size) for r in requests.feed(stream[i:i + size])]
        assert found == [("POST", "deliveries/messages"), ("DELETE", "deliveries/messages/abc"),
                         ("POST", "$batch"), ("MERGE", "mailboxes(PartitionKey='a',RowKey='b')"),
                         ("POST", "deliveries/messages")], size


def test_operations_are_named_by_service_resource_and_kind() -> None:
    assert operation("queue", "POST", "deliveries/messages") == ("queue", "deliveries", "put")
    assert operation("queue", "GET", "mailbox-changes/messages") == ("queue", "mailbox-changes", "get")
    assert operation("queue", "DELETE", "deliveries/messages/abc") == ("queue", "deliveries", "delete")
    assert operation("table", "POST", "$batch") == ("table", "(batch)", "batch")
    assert operation("table", "GET", "mailboxes()") == ("table", "mailboxes", "query")
    assert operation("table", "GET", "mailboxes(PartitionKey='a',RowKey='b')") == ("table", "mailboxes", "get")
