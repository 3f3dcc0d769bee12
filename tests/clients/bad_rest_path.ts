// Must not compile: the REST item route needs its path parameter.
import createClient from "openapi-fetch";
import type { paths } from "./teamhub";

const api = createClient<paths>({ baseUrl: "/" });
await api.PATCH("/api/agents/{item_id}", { body: { name: "x" } }); // ERROR
