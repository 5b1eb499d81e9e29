#pragma once

namespace mailnet::node {
// mailnet-node --topology FILE --domain NAME --run-dir DIR
int node_main(int argc, char** argv);
}
