// The mailnet-resolver program, kept in the library so main.cpp stays a line.
#pragma once

namespace mailnet::resolver {

// mailnet-resolver --topology FILE --run-dir DIR
// 0 after SIGTERM/SIGINT, 1 when the topology or the socket is unusable.
int resolver_main(int argc, char** argv);

}  // namespace mailnet::resolver
