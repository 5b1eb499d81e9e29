#include "node/node_main.hpp"

int main(int argc, char** argv) { return mailnet::node::node_main(argc, argv); }
