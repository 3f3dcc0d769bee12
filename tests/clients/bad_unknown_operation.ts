// Must not compile: no such function.
import createClient from "openapi-fetch";
import type { paths } from "./teamhub";

const api = createClient<paths>({ baseUrl: "/" });
await api.POST("/api/rx/agents.archive", { body: { id: "x" } }); // ERROR
