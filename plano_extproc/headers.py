"""Header names shared by the ext_proc server and the Envoy config it runs behind."""

# Set by the server on every routed request; Envoy's route table matches it to a cluster.
CLUSTER_HEADER = "x-plano-cluster"
# Decision headers: set on the request by the server, copied onto the response by Envoy.
MODEL_HEADER = "x-plano-model"
ROUTING_HEADER = "x-plano-routing"
ROUTE_HEADER = "x-plano-route"
DECISION_HEADERS = (MODEL_HEADER, ROUTING_HEADER, ROUTE_HEADER)
# Every header above: a client-sent copy would steer routing or be echoed back, so both Envoy
# (a header_mutation filter) and the server drop them from incoming requests.
OWN_HEADERS = (CLUSTER_HEADER, *DECISION_HEADERS)
