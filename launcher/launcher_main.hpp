#pragma once

namespace mailnet::launcher {
// mailnet up FILE | validate FILE
int launcher_main(int argc, char** argv);
}
