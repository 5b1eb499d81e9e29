#include "resolver/resolver_app.hpp"

int main(int argc, char** argv) { return mailnet::resolver::resolver_main(argc, argv); }
